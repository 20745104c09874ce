"""LiveBars: the panel's live bar plot drawn again with new values by
blitting. Its pixels show each bar as long as its value on the same axis
png() would scale to, and new labels or a value past the axis draw the
figure anew."""

from __future__ import annotations

import io

from PIL import Image

from kvmbench import plots

BLUE = (0x15, 0x65, 0xC0)  # the bars' colour


def _image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def _bar_lengths(png: bytes) -> list[int]:
    """Blue pixels on each row band of bars, top bar first."""
    image = _image(png)
    width, height = image.size
    pixels = image.load()
    rows = [sum(pixels[x, y] == BLUE for x in range(width)) for y in range(height)]
    bands, current = [], 0
    for count in rows:
        if count:
            current = max(current, count)
        elif current:
            bands.append(current)
            current = 0
    return bands


def data(*values: int, labels: tuple[str, ...] = ("#1 fib", "#2 main")) -> plots.BarData:
    return plots.BarData("hits per request", labels[:len(values)], values)


def test_a_live_drawing_is_a_png_of_the_same_size_as_a_full_one() -> None:
    live, full = plots.LiveBars().png(data(700, 300)), plots.png(data(700, 300))
    assert _image(live).size == _image(full).size


def test_bars_grow_with_their_values_on_one_axis() -> None:
    live = plots.LiveBars()
    first = _bar_lengths(live.png(data(300, 100)))  # an axis to 500
    later = _bar_lengths(live.png(data(420, 105)))  # still fits it
    assert later[0] > first[0] and later[1] > first[1]
    assert abs(later[0] / later[1] - 4) < 0.2 and abs(later[0] / first[0] - 1.4) < 0.05


def test_the_same_values_draw_the_same_bytes_and_new_ones_other_bytes() -> None:
    live = plots.LiveBars()
    one = live.png(data(500, 20))
    assert live.png(data(500, 20)) == one and live.png(data(501, 20)) != one


def test_a_value_past_the_axis_or_new_labels_draw_the_figure_anew() -> None:
    live = plots.LiveBars()
    small = _bar_lengths(live.png(data(100, 50)))
    big = _bar_lengths(live.png(data(100_000, 20_000)))  # the axis end moves: the bar fits
    assert big[0] >= small[0] * 0.9 and big[1] < small[1]
    relabelled = _bar_lengths(live.png(data(100, 50, labels=("#3 spin", "#4 tail"))))
    assert relabelled == small


def test_other_plots_are_drawn_whole() -> None:
    series = plots.SeriesData("hits over time", (("#1 fib", (0.5, 1.5), (10.0, 20.0)),))
    assert plots.LiveBars().png(series) == plots.png(series)
    empty = plots.BarData("hits per request", (), ())
    assert plots.LiveBars().png(empty) == plots.png(empty)
