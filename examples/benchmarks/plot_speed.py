"""Bar chart of bench_speed.py's JSON: median seconds per call, eqx_vae next to diffusers torch (and the Flax VAE
where the run had it).

    python examples/benchmarks/plot_speed.py direct.json [winograd.json ...] examples/benchmarks/speed.png

Needs matplotlib (`pip install matplotlib`).
"""

import json
import sys


def plot(json_paths: list[str], png_path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise SystemExit(f"plot_speed needs matplotlib: pip install matplotlib ({error})") from error
    rows = []
    for json_path in json_paths:
        with open(json_path) as file:
            results = json.load(file)
        algorithm = results.get("args", {}).get("conv_algorithm", "direct")
        rows.extend(dict(row, conv_algorithm=algorithm) for row in results["rows"])
    labels = [f"{row['op']}\n{row['size']}px {row['dtype']}\n{row['conv_algorithm']} convs" for row in rows]
    positions = range(len(rows))
    peers = [("ours_s", "eqx_vae (JAX)"), ("torch_s", "diffusers (torch)")]
    if all("flax_s" in row for row in rows):
        peers.append(("flax_s", "diffusers 0.35.2 Flax"))
    width = 0.8 / len(peers)
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.2))
    bars = []
    for index, (key, label) in enumerate(peers):
        offset = (index - (len(peers) - 1) / 2) * width
        bars.append(axis.bar([p + offset for p in positions], [row[key] for row in rows], width, label=label))
    ours = bars[0]
    for bar, row in zip(ours, rows, strict=True):
        axis.annotate(
            f"{row['ratio']:.2f}x" + (f"\n{row['ratio_flax']:.2f}x" if "ratio_flax" in row else ""),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axis.set_ylim(top=1.15 * max(row[key] for row in rows for key, _ in peers))  # room for the labels
    axis.set_xticks(list(positions), labels, fontsize=8)
    axis.set_ylabel("median seconds per call (batch 1)")
    cpu = results.get("machine", {}).get("cpu", "CPU")
    cores = results.get("machine", {}).get("cpus", "?")
    axis.set_title(f"SD-size VAE on {cpu} ({cores} cores); labels: ours/torch, ours/Flax")
    axis.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    print(f"wrote {png_path}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: plot_speed.py RESULTS.json [MORE.json ...] OUT.png")
    plot(sys.argv[1:-1], sys.argv[-1])
