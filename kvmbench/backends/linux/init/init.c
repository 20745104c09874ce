/*
 * kvmbench's PID 1 for Linux guests.
 *
 * Built on the host at run time (gcc -static -O2) and put in the initramfs as
 * /init with busybox for the userland. It mounts proc, sys and devtmpfs,
 * lets /proc/kallsyms show addresses, prints a ready marker on the console
 * and then serves the host on a second serial port (ttyS1), which is never
 * the user's console.
 *
 * Framing (both directions): every message is an 8-byte header, the magic
 * "KVB", a type byte and the payload's length as a little-endian u32, then
 * the payload. A command's output travels only inside length-counted
 * payloads, so nothing it prints can be taken for a header.
 *
 * Host to guest:
 *   'P' ping (payload echoed back in a 'p' answer: the host's sync token)
 *   'C' run the payload with /bin/sh -c; answered by 'O' chunks of its
 *       stdout and stderr (one pipe, in order) and one 'X' (wait status,
 *       u32); while it runs, a 'K' kills its process group
 *   'F' send the file named by the payload; answered by 'D' chunks and one
 *       'Z' (0, or the errno that ended the read, u32)
 * Guest to host, unprompted:
 *   'R' ready, once per boot (payload: the kernel release)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define CHANNEL "/dev/ttyS1"
#define READY_MARKER "kvmbench-init: ready"
/* Header: 'K' 'V' 'B' type, u32 length (little-endian). */
#define HEADER 8
#define MAX_PAYLOAD (1u << 20)
#define CHUNK 4096

static int channel = -1;

static void console_line(const char *text)
{
	int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
	if (fd < 0)
		return;
	dprintf(fd, "%s\n", text);
	close(fd);
}

static void die(const char *what)
{
	char line[256];
	snprintf(line, sizeof line, "kvmbench-init: %s: %s", what, strerror(errno));
	console_line(line);
	/* PID 1 must not exit (the kernel would panic): power off instead. */
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

static void write_all(int fd, const void *data, size_t size)
{
	const char *p = data;
	while (size) {
		ssize_t n = write(fd, p, size);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("write to the host channel");
		}
		p += n;
		size -= (size_t)n;
	}
}

static void send_message(char type, const void *payload, uint32_t size)
{
	unsigned char header[HEADER] = {'K', 'V', 'B', (unsigned char)type,
		size & 0xff, (size >> 8) & 0xff, (size >> 16) & 0xff, size >> 24};
	write_all(channel, header, HEADER);
	if (size)
		write_all(channel, payload, size);
}

static void send_text(char type, const char *text)
{
	send_message(type, text, (uint32_t)strlen(text));
}

static void send_u32(char type, uint32_t value)
{
	unsigned char le[4] = {value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff, value >> 24};
	send_message(type, le, 4);
}

/* Incoming bytes are gathered here until a whole message is in. */
static unsigned char inbox[HEADER + MAX_PAYLOAD + 1];
static size_t inbox_used;

/* One whole message from the inbox if there is one: returns its type and
 * points *payload at its NUL-terminated payload; 0 if incomplete. Bytes
 * before a header's magic are dropped (a host that connected mid-stream). */
static char take_message(unsigned char **payload, uint32_t *size)
{
	static size_t consumed;
	if (consumed) {
		memmove(inbox, inbox + consumed, inbox_used - consumed);
		inbox_used -= consumed;
		consumed = 0;
	}
	size_t start = 0;
	while (start + 3 <= inbox_used && memcmp(inbox + start, "KVB", 3) != 0)
		start++;
	if (start) {
		memmove(inbox, inbox + start, inbox_used - start);
		inbox_used -= start;
	}
	if (inbox_used < HEADER)
		return 0;
	uint32_t length = inbox[4] | inbox[5] << 8 | inbox[6] << 16 | (uint32_t)inbox[7] << 24;
	if (length > MAX_PAYLOAD) {
		inbox_used = 0; /* garbage: resynchronise on the next magic */
		return 0;
	}
	if (inbox_used < HEADER + length)
		return 0;
	char type = (char)inbox[3];
	/* NUL-terminate in place: the byte after the payload is the next
	 * message's first, saved and restored by shifting on the next call. */
	static unsigned char terminated[MAX_PAYLOAD + 1];
	memcpy(terminated, inbox + HEADER, length);
	terminated[length] = 0;
	*payload = terminated;
	*size = length;
	consumed = HEADER + length;
	return type;
}

/* Read what the channel has into the inbox; returns 0 at hangup. */
static int fill_inbox(void)
{
	if (inbox_used == sizeof inbox)
		inbox_used = 0;
	ssize_t n = read(channel, inbox + inbox_used, sizeof inbox - inbox_used);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 1;
		die("read from the host channel");
	}
	inbox_used += (size_t)n;
	return n > 0;
}

static int signals; /* a signalfd for SIGCHLD */
/* /dev/null, opened once at start: a command's stdin. The child only dup2s
 * it, so every open(2) a traced command makes is the command's own. */
static int null_input = -1;

static void reap_orphans(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void run_command(const char *command)
{
	int out[2];
	if (pipe2(out, O_CLOEXEC) < 0) {
		send_text('O', "kvmbench-init: pipe failed\n");
		send_u32('X', 127 << 8);
		return;
	}
	pid_t child = fork();
	if (child == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setsid();
		dup2(null_input, 0); /* the copy has no FD_CLOEXEC (dup2(2)) */
		dup2(out[1], 1);
		dup2(out[1], 2);
		execl("/bin/sh", "sh", "-c", command, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	if (child < 0) {
		close(out[0]);
		send_text('O', "kvmbench-init: fork failed\n");
		send_u32('X', 127 << 8);
		return;
	}
	int status = 0, exited = 0, open_pipe = 1;
	char buffer[CHUNK];
	while (!exited || open_pipe) {
		struct pollfd fds[3] = {
			{.fd = open_pipe ? out[0] : -1, .events = POLLIN},
			{.fd = channel, .events = POLLIN},
			{.fd = signals, .events = POLLIN},
		};
		/* Once the shell has exited, its background children may keep the
		 * pipe open: take what is there and finish. */
		if (poll(fds, 3, exited ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (fds[0].revents) {
			ssize_t n = read(out[0], buffer, sizeof buffer);
			if (n > 0)
				send_message('O', buffer, (uint32_t)n);
			else if (n == 0 || errno != EINTR)
				open_pipe = 0;
		} else if (exited) {
			open_pipe = 0;
		}
		if (fds[1].revents) {
			fill_inbox();
			unsigned char *payload;
			uint32_t size;
			char type;
			while ((type = take_message(&payload, &size)))
				if (type == 'K')
					kill(-child, SIGKILL);
		}
		if (fds[2].revents) {
			struct signalfd_siginfo info;
			while (read(signals, &info, sizeof info) > 0)
				;
			int s;
			pid_t done;
			while ((done = waitpid(-1, &s, WNOHANG)) > 0)
				if (done == child) {
					status = s;
					exited = 1;
				}
		}
	}
	close(out[0]);
	send_u32('X', (uint32_t)status);
}

static void send_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		send_u32('Z', (uint32_t)errno);
		return;
	}
	static char buffer[MAX_PAYLOAD / 4];
	for (;;) {
		ssize_t n = read(fd, buffer, sizeof buffer);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			close(fd);
			send_u32('Z', (uint32_t)err);
			return;
		}
		if (n == 0)
			break;
		send_message('D', buffer, (uint32_t)n);
	}
	close(fd);
	send_u32('Z', 0);
}

static void write_setting(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY);
	if (fd >= 0) {
		write_all(fd, value, strlen(value));
		close(fd);
	}
}

static void open_channel(void)
{
	channel = open(CHANNEL, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (channel < 0)
		die("open " CHANNEL);
	/* Raw, 8-bit clean, no echo, no flow control: termios(3) cfmakeraw,
	 * and the fastest rate the UART emulation accepts. */
	struct termios mode;
	if (tcgetattr(channel, &mode) < 0)
		die("tcgetattr " CHANNEL);
	cfmakeraw(&mode);
	mode.c_cflag |= CLOCAL | CREAD;
	mode.c_cflag &= ~CRTSCTS;
	cfsetspeed(&mode, B115200);
	mode.c_cc[VMIN] = 1;
	mode.c_cc[VTIME] = 0;
	if (tcsetattr(channel, TCSANOW, &mode) < 0)
		die("tcsetattr " CHANNEL);
}

int main(void)
{
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mkdir("/dev", 0755);
	mkdir("/tmp", 01777);
	if (mount("proc", "/proc", "proc", 0, NULL) < 0)
		die("mount /proc");
	if (mount("sysfs", "/sys", "sysfs", 0, NULL) < 0)
		die("mount /sys");
	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) < 0)
		die("mount /dev");
	mount("tmpfs", "/tmp", "tmpfs", 0, NULL);
	/* Documentation/admin-guide/sysctl/kernel.rst: kptr_restrict 0 lets
	 * /proc/kallsyms and /proc/modules show addresses; perf_event_paranoid
	 * -1 opens perf to everything; dmesg_restrict 0 lets dmesg read. */
	write_setting("/proc/sys/kernel/kptr_restrict", "0");
	write_setting("/proc/sys/kernel/perf_event_paranoid", "-1");
	write_setting("/proc/sys/kernel/dmesg_restrict", "0");
	setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
	setenv("HOME", "/", 1);
	setenv("TERM", "dumb", 1);

	sigset_t child_signals;
	sigemptyset(&child_signals);
	sigaddset(&child_signals, SIGCHLD);
	sigprocmask(SIG_BLOCK, &child_signals, NULL);
	signals = signalfd(-1, &child_signals, SFD_NONBLOCK | SFD_CLOEXEC);
	if (signals < 0)
		die("signalfd");

	null_input = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_input < 0)
		die("open /dev/null");
	open_channel();
	struct utsname uts;
	uname(&uts);
	console_line(READY_MARKER);
	send_text('R', uts.release);

	for (;;) {
		struct pollfd fds[2] = {{.fd = channel, .events = POLLIN}, {.fd = signals, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (fds[1].revents) {
			struct signalfd_siginfo info;
			while (read(signals, &info, sizeof info) > 0)
				;
			reap_orphans();
		}
		if (!fds[0].revents)
			continue;
		fill_inbox();
		unsigned char *payload;
		uint32_t size;
		char type;
		while ((type = take_message(&payload, &size))) {
			switch (type) {
			case 'P':
				send_message('p', payload, size);
				break;
			case 'C':
				run_command((const char *)payload);
				break;
			case 'F':
				send_file((const char *)payload);
				break;
			default:
				break; /* unknown requests are ignored: the host times out */
			}
		}
	}
}
