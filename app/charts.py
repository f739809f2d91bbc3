"""Server-rendered SVG charts (no script, so the page's CSP stays 'self'): geometry only, the
template draws it. One chart per split: accuracy per place name, one bar colour per backend."""
from dataclasses import dataclass

PALETTE = ("#2b6cb0", "#dd6b20", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f")
WIDTH, HEIGHT = 680, 230
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 88  # room for the y ticks and the slanted place names


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str  # the tooltip: backend, place, accuracy


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    bars: tuple
    ticks: tuple  # (y, label) for the accuracy axis
    labels: tuple  # (x, y, text) for the place names
    legend: tuple  # (colour, name)


def backend_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def accuracy_chart(title: str, series: dict, colours: dict) -> Chart:
    """Grouped bars: `series` maps a backend's display name to {place: accuracy in [0, 1]}."""
    places = list(dict.fromkeys(p for per_place in series.values() for p in per_place))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plot_w / max(1, len(places))
    bar_w = group * 0.8 / max(1, len(series))
    bars = []
    for s, (name, per_place) in enumerate(series.items()):
        for i, place in enumerate(places):
            if place not in per_place:
                continue
            accuracy = per_place[place]
            height = plot_h * accuracy
            bars.append(Bar(round(LEFT + i * group + group * 0.1 + s * bar_w, 2), round(TOP + plot_h - height, 2),
                            round(bar_w, 2), round(height, 2), colours[name], f"{name}, {place}: {accuracy:.1%}"))
    ticks = tuple((round(TOP + plot_h * (1 - f), 2), f"{f:.0%}") for f in (0, 0.25, 0.5, 0.75, 1.0))
    labels = tuple((round(LEFT + (i + 0.5) * group, 2), TOP + plot_h + 12, p) for i, p in enumerate(places))
    return Chart(title, WIDTH, HEIGHT, tuple(bars), ticks, labels, tuple((colours[n], n) for n in series))


SHADES = 5  # steps of shading each way; static/style.css has a class per step and sign


@dataclass(frozen=True)
class Cell:
    character: str
    shade: str  # a CSS class: "a0" (nothing), "p1".."p5" (relied on), "n1".."n5" (pushed against)
    title: str  # the tooltip: the character and its score


def attribution_cells(attribution: dict) -> list[Cell]:
    """One cell per question character, shaded by its score relative to the largest |score| (classes,
    not inline styles: the CSP allows no inline style). Where the method leaves the words out of its
    sum (Integrated Gradients), their occlusion scores shade them, and the tooltip says which is which."""
    method = attribution["method"].replace("_", " ")
    words = attribution.get("word_scores") or [0.0] * len(attribution["scores"])
    scored = [(s, method) if s or not w else (w, "occlusion") for s, w in zip(attribution["scores"], words)]
    largest = max((abs(s) for s, _ in scored), default=0.0) or 1.0
    cells = []
    for character, (score, source) in zip(attribution["characters"], scored):
        step = round(SHADES * abs(score) / largest)
        shade = "a0" if step == 0 else f"{'p' if score > 0 else 'n'}{step}"
        cells.append(Cell(character, shade, f"{character!r}: {score:+.3f} ({source})"))
    return cells
