/*
 * kvmbench's execution counter: a QEMU TCG plugin.
 *
 * Counts how often the guest executes the instructions at given virtual
 * addresses, into a file that kvmbench maps too, so the counts are read
 * while the guest runs and nothing stops it. Loaded as
 *   -plugin file=execcount.so,table=PATH[,atomic=on]
 *
 * The table file (all fields little-endian u64):
 *   [0] magic "KVBCOUNT"   [1] capacity N   [2] generation   [3] slots used
 *   [4] translations seen  [5] instructions instrumented   [6-7] reserved
 *   then N addresses (0 = an empty slot), then N counts.
 * kvmbench writes addresses, then bumps the generation. The plugin notices
 * at the next translation or the next time a vCPU resumes (after a stop,
 * or on waking from idle) and has QEMU drop every translation
 * (qemu_plugin_reset), so code translated before sees the new table too;
 * a stop and continue therefore makes a change exact from that point.
 *
 * Counting is an inline "add 1" into the count itself (no call into the
 * plugin per hit), which is exact with one vCPU. With several vCPUs
 * running in parallel (MTTCG) inline adds can lose updates (the API says
 * they are not atomic), so atomic=on counts through a callback with an
 * atomic add instead.
 *
 * QEMU's qemu-plugin.h is not installed by Debian (it ships only in QEMU's
 * source), so the few types and functions used here are declared below from
 * QEMU's documentation (docs/devel/tcg-plugins.rst and the API reference),
 * for plugin API version 1 (QEMU 7.2).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the QEMU plugin API, as documented (API version 1) ---- */

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;

/* The information block handed to qemu_plugin_install. */
typedef struct {
	const char *target_name;
	struct {
		int min;
		int cur;
	} version;
	bool system_emulation;
	union {
		struct {
			int smp_vcpus;
			int max_vcpus;
		} system;
	};
} qemu_info_t;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };

typedef void (*qemu_plugin_simple_cb_t)(qemu_plugin_id_t id);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_simple_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t index);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op,
						       void *ptr, uint64_t imm);
extern void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
						   enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_vcpu_resume_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_simple_cb_t cb);
extern void qemu_plugin_reset(qemu_plugin_id_t id, qemu_plugin_simple_cb_t cb);
extern void qemu_plugin_outs(const char *string);

EXPORT int qemu_plugin_version = 1;

/* ---- the table ---- */

#define MAGIC 0x544e554f4342564bULL /* "KVBCOUNT" little-endian */
#define HEADER_WORDS 8

enum { H_MAGIC, H_CAPACITY, H_GENERATION, H_USED, H_TRANSLATIONS, H_INSTRUMENTED };

static volatile uint64_t *table;    /* the shared file */
static volatile uint64_t *addresses;
static uint64_t *counts;
static uint64_t capacity;
static bool atomic_counts;

/* Open addressing from address to slot, private to the plugin; rebuilt
 * whenever the generation moves. Size: a power of two, at least 2N. */
static uint64_t *lookup_keys;
static uint32_t *lookup_slots;
static uint64_t lookup_mask;
static uint64_t seen_generation;
static bool resetting; /* accessed atomically: vCPU threads translate in parallel */

static inline uint64_t mix(uint64_t x)
{
	/* A 64-bit finalizer (the splitmix64 constants) spreads aligned kernel
	 * addresses over the buckets. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static void rebuild_lookup(void)
{
	uint64_t generation = __atomic_load_n(&table[H_GENERATION], __ATOMIC_ACQUIRE);
	for (uint64_t i = 0; i <= lookup_mask; i++)
		lookup_keys[i] = 0;
	for (uint64_t slot = 0; slot < capacity; slot++) {
		uint64_t address = addresses[slot];
		if (!address)
			continue;
		uint64_t bucket = mix(address) & lookup_mask;
		while (lookup_keys[bucket] && lookup_keys[bucket] != address)
			bucket = (bucket + 1) & lookup_mask;
		lookup_keys[bucket] = address;
		lookup_slots[bucket] = (uint32_t)slot;
	}
	seen_generation = generation;
}

static inline long find_slot(uint64_t address)
{
	uint64_t bucket = mix(address) & lookup_mask;
	while (lookup_keys[bucket]) {
		if (lookup_keys[bucket] == address)
			return lookup_slots[bucket];
		bucket = (bucket + 1) & lookup_mask;
	}
	return -1;
}

static void count_atomically(unsigned int vcpu_index, void *userdata)
{
	(void)vcpu_index;
	__atomic_fetch_add((uint64_t *)userdata, 1, __ATOMIC_RELAXED);
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
static void resumed(qemu_plugin_id_t id, unsigned int vcpu_index);

static void register_callbacks(qemu_plugin_id_t id)
{
	qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
	qemu_plugin_register_vcpu_resume_cb(id, resumed);
}

static void after_reset(qemu_plugin_id_t id)
{
	/* Every callback is gone and every translation flushed: start over
	 * with the new table. */
	rebuild_lookup();
	__atomic_store_n(&resetting, false, __ATOMIC_RELEASE);
	register_callbacks(id);
}

static void check_generation(qemu_plugin_id_t id)
{
	/* after_reset runs with every vCPU stopped (QEMU resets plugins as
	 * exclusive work), so the lookup is only ever rebuilt there. */
	if (__atomic_load_n(&table[H_GENERATION], __ATOMIC_ACQUIRE) != seen_generation) {
		bool expected = false;
		if (__atomic_compare_exchange_n(&resetting, &expected, true, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			qemu_plugin_reset(id, after_reset);
	}
}

static void resumed(qemu_plugin_id_t id, unsigned int vcpu_index)
{
	(void)vcpu_index;
	check_generation(id);
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	check_generation(id);
	__atomic_fetch_add(&table[H_TRANSLATIONS], 1, __ATOMIC_RELAXED);
	size_t n = qemu_plugin_tb_n_insns(tb);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		long slot = find_slot(qemu_plugin_insn_vaddr(insn));
		if (slot < 0)
			continue;
		__atomic_fetch_add(&table[H_INSTRUMENTED], 1, __ATOMIC_RELAXED);
		if (atomic_counts)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, count_atomically, QEMU_PLUGIN_CB_NO_REGS,
							       &counts[slot]);
		else
			qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counts[slot],
								   1);
	}
}

static int fail(const char *message)
{
	char line[512];
	snprintf(line, sizeof line, "kvmbench execcount: %s\n", message);
	qemu_plugin_outs(line);
	fprintf(stderr, "%s", line);
	return -1;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	(void)info;
	const char *path = NULL;
	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], "table=", 6) == 0)
			path = argv[i] + 6;
		else if (strcmp(argv[i], "atomic=on") == 0)
			atomic_counts = true;
		else if (strcmp(argv[i], "atomic=off") == 0)
			atomic_counts = false;
		else
			return fail("unknown argument (use table=PATH[,atomic=on])");
	}
	if (!path)
		return fail("no table=PATH given");
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail("cannot open the table file");
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)(HEADER_WORDS * 8)) {
		close(fd);
		return fail("the table file is too short");
	}
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return fail("cannot map the table file");
	table = map;
	capacity = table[H_CAPACITY];
	if (table[H_MAGIC] != MAGIC || (uint64_t)st.st_size < (HEADER_WORDS + 2 * capacity) * 8)
		return fail("the table file has no KVBCOUNT header or is shorter than its capacity");
	addresses = table + HEADER_WORDS;
	counts = (uint64_t *)(table + HEADER_WORDS + capacity);
	uint64_t size = 16;
	while (size < 2 * capacity)
		size <<= 1;
	lookup_mask = size - 1;
	lookup_keys = calloc(size, sizeof *lookup_keys);
	lookup_slots = calloc(size, sizeof *lookup_slots);
	if (!lookup_keys || !lookup_slots)
		return fail("out of memory");
	rebuild_lookup();
	register_callbacks(id);
	return 0;
}
