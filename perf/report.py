"""Freeze perf report: the Markdown report, the targets of issue 5 and the PNG plots of a run.py run."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"off": "black", "learned": "tab:red", "kmeans": "tab:blue", "knn": "tab:orange", "online-off": "tab:purple",
          "online": "tab:green", "front": "tab:brown"}
LABELS = {"off": "caches off (full model)", "learned": "learned (shipped)", "kmeans": "k-means", "knn": "knn",
          "online-off": "k-means+online slots, online off", "online": "k-means + online updates",
          "front": "learned + front tiers (shipped)"}


def f(v, fmt="{:.0f}", none="-"):
    return none if v is None or v == "" else fmt.format(v)


def pc(v, digits=2):
    return f(None if v is None else 100 * v, "{:.%df}%%" % digits)


# ---- targets ----------------------------------------------------------------------------------

def targets(h):
    sat = {(r["workload"], r["mode"]): r for r in h.rows["saturation"]}
    load = h.rows["load"]
    out = []

    def sat_target(name, w, modes, want_x):
        for m in modes:
            r = sat.get((w, m))
            if not r:
                continue
            x, ag = r["speedup_vs_off"], r["agreement"]
            ok = x is not None and ag is not None and x >= want_x and ag >= 0.995
            out.append({"target": name, "mode": m, "want": f"≥ {want_x:g}x off, ≥ 99.5% agreement",
                        "measured": f"{x:.2f}x ({r['throughput_rps']:.0f} vs "
                                    f"{sat[(w, 'off')]['throughput_rps']:.0f} answers/s), "
                                    f"{pc(ag)} agreement",
                        "met": ok})

    sat_target("iid throughput", "iid", ["learned", "kmeans", "knn", "online"], 2)
    sat_target("temporal + online throughput", "temporal", ["online"], 8)
    # hit latency: the lightest offered load, against caches-off at the same rate
    done = False
    for w, m in (("zipf", "front"), ("iid", "learned"), ("iid", "kmeans"), ("temporal", "online"),
                 ("iid", "knn")):
        rows = [r for r in load if r["workload"] == w and r["mode"] == m and r["hit_p50_us"]]
        if not rows:
            continue
        r = min(rows, key=lambda r: r["offered_rps"])
        base = next((q for q in load if q["workload"] == w and q["mode"] == "off" and
                     q["offered_rps"] == r["offered_rps"]), None)
        if not base or not base["p50_us"]:
            continue
        ratio = r["hit_p50_us"] / base["p50_us"]
        out.append({"target": f"hit p50 latency ({w})", "mode": m,
                    "want": "≤ 25% of caches-off p50",
                    "measured": f"{100 * ratio:.0f}% (hits {r['hit_p50_us']:.0f} us vs off "
                                f"{base['p50_us']:.0f} us, client side, {r['offered_rps']:.0f} req/s)",
                    "met": ratio <= 0.25})
        done = True
    if not done:  # no live run: the appliance-side time from the pcap replay (queueing included)
        for w, m in (("iid", "learned"), ("iid", "kmeans"), ("temporal", "online")):
            r, b = sat.get((w, m)), sat.get((w, "off"))
            if r and b and r["inside_hit_p50_us"] and b["inside_p50_us"]:
                ratio = r["inside_hit_p50_us"] / b["inside_p50_us"]
                out.append({"target": f"hit p50 latency ({w})", "mode": m,
                            "want": "≤ 25% of caches-off p50",
                            "measured": f"{100 * ratio:.0f}% (in-appliance time at saturation, "
                                        "no live run)", "met": ratio <= 0.25})
    # the front tiers (issue 12): near-duplicate and repeated traffic, i.i.d. unharmed
    sat_target("temporal throughput, front tiers", "temporal", ["front"], 8)
    sat_target("zipf throughput, front tiers", "zipf", ["front"], 5)
    r, b = sat.get(("iid", "front")), sat.get(("iid", "learned"))
    if r and b:
        x = r["throughput_rps"] / b["throughput_rps"]
        out.append({"target": "iid throughput, front tiers", "mode": "front",
                    "want": "within 3% of learned (same snapshot, no front tiers)",
                    "measured": f"{x:.3f}x ({r['throughput_rps']:.0f} vs {b['throughput_rps']:.0f} "
                                "answers/s)", "met": x >= 0.97})
    for m in ("learned", "kmeans", "knn", "online", "front"):
        r = sat.get(("ood", m))
        if r and r["agreement"] is not None:
            out.append({"target": "ood agreement", "mode": m, "want": "≥ 99.5%",
                        "measured": f"{pc(r['agreement'])} (hits {pc(r['hit_rate'], 1)})",
                        "met": r["agreement"] >= 0.995})
    return out


# ---- plots ------------------------------------------------------------------------------------

def modes_of(rows):
    seen = []
    for r in rows:
        if r["mode"] not in seen:
            seen.append(r["mode"])
    return seen


def plot_saturation(h, path):
    rows = h.rows["saturation"]
    wls = list(dict.fromkeys(r["workload"] for r in rows))
    modes = modes_of(rows)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(modes)
    for j, m in enumerate(modes):
        xs, ys = [], []
        for i, w in enumerate(wls):
            r = next((q for q in rows if q["workload"] == w and q["mode"] == m), None)
            if r:
                xs.append(i + (j - (len(modes) - 1) / 2) * width)
                ys.append(r["throughput_rps"])
                if m != "off" and r["speedup_vs_off"]:
                    ax.text(xs[-1], ys[-1], f"{r['speedup_vs_off']:.1f}x", ha="center",
                            va="bottom", fontsize=7)
        ax.bar(xs, ys, width, color=COLORS.get(m), label=LABELS.get(m, m))
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels(wls)
    ax.set_ylabel("answers/s at saturation (pcap replay)")
    ax.set_title("Throughput at saturation, ratio against caches off")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_load(h, path):
    rows = h.rows["load"]
    wls = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axs = plt.subplots(2, len(wls), figsize=(5.5 * len(wls), 7.5), squeeze=False)
    for i, w in enumerate(wls):
        ax, ax2 = axs[0][i], axs[1][i]
        top = 0
        for m in modes_of(rows):
            rs = sorted((r for r in rows if r["workload"] == w and r["mode"] == m),
                        key=lambda r: r["offered_rps"])
            if not rs:
                continue
            x = [r["offered_rps"] for r in rs]
            top = max(top, max(x))
            ax.plot(x, [r["answered_rps"] or 0 for r in rs], "o-", color=COLORS.get(m),
                    label=LABELS.get(m, m))
            ax2.plot(x, [r["p50_us"] for r in rs], "o-", color=COLORS.get(m), label=f"{m} p50")
            ax2.plot(x, [r["p99_us"] for r in rs], "s--", color=COLORS.get(m), alpha=0.6,
                     label=f"{m} p99")
        ax.plot([0, top], [0, top], ":", color="grey", label="answered = offered")
        ax.set_title(f"{w}: throughput vs offered load (live veth)")
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel("answered (requests/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax2.set_yscale("log")
        ax2.set_title(f"{w}: client latency vs offered load")
        ax2.set_xlabel("offered load (requests/s)")
        ax2.set_ylabel("latency (us, log)")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_cdf(h, path):
    rows = h.rows["load"]
    wls = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axs = plt.subplots(1, len(wls), figsize=(5.5 * len(wls), 4), squeeze=False)
    q = [i / 100 for i in range(101)]
    for i, w in enumerate(wls):
        ax = axs[0][i]
        rate = min(r["offered_rps"] for r in rows if r["workload"] == w)
        for m in modes_of(rows):
            d = h.cdf.get((w, m, rate))
            if not d or not d["all"]:
                continue
            ax.plot(d["all"], q, color=COLORS.get(m), label=f"{LABELS.get(m, m)}: all")
            if m != "off" and d["hit"]:
                ax.plot(d["hit"], q, "--", color=COLORS.get(m), label=f"{m}: cache hits only")
        ax.set_xscale("log")
        ax.set_title(f"{w}: latency CDF at {rate:.0f} req/s offered")
        ax.set_xlabel("client latency (us, log)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_exits(h, path):
    rows = [r for r in h.exits if r["scenario"] == "saturation"]
    wls = list(dict.fromkeys(r["workload"] for r in rows))
    modes = modes_of(rows)
    points = h.model.exit_points()
    cols = min(2, len(wls))
    nrows = -(-len(wls) // cols)
    fig, axs = plt.subplots(nrows, cols, figsize=(6 * cols, 3.4 * nrows), squeeze=False,
                            sharey=True)
    width = 0.8 / len(modes)
    for ax in axs.flat[len(wls):]:
        ax.axis("off")
    for i, w in enumerate(wls):
        ax = axs.flat[i]
        for j, m in enumerate(modes):
            counts = {r["exit"]: r["count"] for r in rows if r["workload"] == w and r["mode"] == m}
            tot = sum(counts.values()) or 1
            xs = [k + (j - (len(modes) - 1) / 2) * width for k in range(len(points))]
            ax.bar(xs, [100 * counts.get(p, 0) / tot for p in points], width,
                   color=COLORS.get(m), label=LABELS.get(m, m))
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels([p.replace("block", "b") for p in points], fontsize=8)
        ax.set_title(f"{w}")
        ax.set_xlabel("exit point")
        ax.grid(axis="y", alpha=0.3)
    for row in axs:
        row[0].set_ylabel("% of requests answered there")
    axs.flat[0].legend(fontsize=7)
    fig.suptitle("Exit histogram per workload (pcap replay)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_tradeoff(h, path):
    rows = h.rows["sweep"]
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    mk = {"learned": "tab:red", "kmeans": "tab:blue", "knn": "tab:orange"}
    for ax, key, title in ((axs[0], "agreement", "agreement with the full model"),
                           (axs[1], "accuracy", "accuracy against the labels")):
        for k in kinds:
            rs = sorted((r for r in rows if r["kind"] == k and isinstance(r["threshold"], float)),
                        key=lambda r: r["effective_layers"])
            if rs:
                ax.plot([r["effective_layers"] for r in rs], [100 * r[key] for r in rs], "o-",
                        color=mk.get(k), label=f"{k}: budget sweep")
                for r in rs:
                    ax.annotate(f"{r['threshold']:g}", (r["effective_layers"], 100 * r[key]),
                                fontsize=6, xytext=(3, 3), textcoords="offset points")
            z = [r for r in rows if r["kind"] == k and r["threshold"] == "zero-error"]
            if z:
                ax.plot([z[0]["effective_layers"]], [100 * z[0][key]], "D", color=mk.get(k),
                        label=f"{k}: zero-error threshold (paper)")
        w0 = rows[0]["workload"] if rows else None
        for r in h.rows["saturation"]:  # the appliance's own modes on the same workload
            if r["workload"] == w0 and r["mode"] != "off" and r[key] is not None:
                ax.plot([r["effective_layers"]], [100 * r[key]], "^", color=COLORS.get(r["mode"]),
                        markersize=8, markeredgecolor="black",
                        label=f"appliance: {LABELS.get(r['mode'], r['mode'])}")
        o = [r for r in rows if r["threshold"] == "oracle"]
        if o:
            ax.plot([o[0]["effective_layers"]], [100 * o[0][key]], "*", color="tab:red",
                    markersize=12, label="oracle (upper bound)")
        base = 100.0 if key == "agreement" else (100 * rows[0]["full_model_accuracy"] if rows else None)
        if base is not None:
            ax.plot([1.0], [base], "ks", markersize=8, label="caches off (full model)")
            ax.axhline(base, color="black", lw=0.8, ls=":")
        if key == "agreement":
            ax.axhline(99.5, color="tab:red", lw=0.8, ls="--", label="99.5% target")
        ax.set_xlabel("effective layers (fraction of ResNet-18's weight layers run)")
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    w = rows[0]["workload"] if rows else "?"
    fig.suptitle(f"Accuracy vs exits: thresholds calibrated on the train split, evaluated on "
                 f"the test set ({w})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---- Markdown ---------------------------------------------------------------------------------

def table(cols, rows):
    s = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    for r in rows:
        s += "| " + " | ".join(fn(r) for _, fn in cols) + " |\n"
    return s


def plot_front_sweep(h, path):
    """Speed-up against agreement per near-duplicate radius (modes front and front@R)."""
    rows = [r for r in h.rows["saturation"] if r["mode"].split("@")[0] == "front"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for w in sorted({r["workload"] for r in rows}):
        rs = sorted((r for r in rows if r["workload"] == w), key=lambda r: r["mode"])
        xs = [r["speedup_vs_off"] or 0 for r in rs]
        ys = [100 * (r["agreement"] or 0) for r in rs]
        ax.plot(xs, ys, "o-", label=w)
        for r, x, y in zip(rs, xs, ys):
            ax.annotate("calibrated" if r["mode"] == "front" else "r=" + r["mode"].split("@")[1],
                        (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(99.5, color="k", ls=":", lw=0.8)
    ax.set_xlabel("throughput / caches off (saturation, median of runs)")
    ax.set_ylabel("agreement with the full model (%)")
    ax.set_title("front tiers: near-duplicate radius against agreement")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_drift(h, path):
    """Agreement with caches-off over a sliding window, before and after the stream shifts."""
    rows, info = h.rows["drift"], getattr(h, "drift_info", {})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for m, lab in (("front", "caches + front tiers, unguarded"),
                   ("verify", "the same, self-checking (guarded thresholds)")):
        rs = [r for r in rows if r["mode"] == m]
        ax.plot([r["request"] for r in rs], [100 * r["agreement"] for r in rs], label=lab,
                color=COLORS.get(m, "tab:green" if m == "verify" else None))
    ax.axhline(99.5, color="k", ls=":", lw=0.8, label="target 99.5 %")
    if info:
        ax.axvline(info["switch_at"], color="gray", ls="--", lw=0.8,
                   label="stream shifts (contrast x2)")
        if info.get("recovered_after") is not None:
            ax.axvline(info["switch_at"] + info["recovered_after"], color="tab:green", ls=":",
                       lw=0.8, label=f"back for good after {info['recovered_after']} requests")
    ax.set_xlabel("request")
    ax.set_ylabel(f"agreement with caches off, last {info.get('window', '?')} requests (%)")
    ax.set_ylim(bottom=max(90, min([100 * r["agreement"] for r in rows] + [99]) - 0.5))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(h):
    plots = []
    for name, fn, cond in (("saturation.png", plot_saturation, h.rows["saturation"]),
                           ("load.png", plot_load, h.rows["load"]),
                           ("latency_cdf.png", plot_cdf, h.rows["load"]),
                           ("exits.png", plot_exits, h.exits),
                           ("tradeoff.png", plot_tradeoff, h.rows["sweep"]),
                           ("drift.png", plot_drift, h.rows.get("drift")),
                           ("front_sweep.png", plot_front_sweep,
                            any("@" in r["mode"] for r in h.rows["saturation"]))):
        if cond:
            fn(h, os.path.join(h.out, name))
            plots.append(name)
    di = getattr(h, "drift_info", None)
    tg = targets(h)
    h.targets = tg
    e = h.env
    a = h.a
    md = ["# Freeze perf run " + e["date"], ""]
    md.append(f"`perf/run.py {e.get('argv', '')}` at commit {e.get('commit', '?')}"
              f"{' (dirty tree)' if e.get('dirty') else ''} on {e['cpus']} CPUs ({e['cpu']}); "
              f"load average at start {', '.join(f'{x:.2f}' for x in e['load_avg_at_start'])}, "
              f"at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the "
              "machine shares its 2 CPUs with the run). "
              f"Model {h.model.name} ({os.path.relpath(h.model_yaml, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}); "
              "snapshots: " + ", ".join(f"{k} `{os.path.basename(v)}`" for k, v in h.snap.items())
              + f". Workloads: {a.count} requests each from the Fashion-MNIST test set "
              f"(temporal scenes of {a.scene_len} frames; zipf s={a.zipf_s} over {a.zipf_items} "
              f"images). Scenario wall times: {h.timing}.")
    md.append("")
    if di:
        md.append(f"## Drift (live veth, {di['rate']:.0f} req/s)\n")
        md.append(f"{di['switch_at']} test images, then {di['requests'] - di['switch_at']} "
                  f"contrast-stretched ones. Self-checking brought the agreement (last "
                  f"{di['window']} requests) back to >= 99.5 % for good "
                  f"**{di['recovered_after']} requests** after the switch; guard changes "
                  f"{di['guard_changes']}. See drift.png / drift.csv.\n")
    if tg:
        md.append("## Targets\n")
        md.append(table([("target", lambda r: r["target"]), ("mode", lambda r: r["mode"]),
                         ("wanted", lambda r: r["want"]), ("measured", lambda r: r["measured"]),
                         ("met", lambda r: "yes" if r["met"] else "**no**")], tg))
    sat = h.rows["saturation"]
    if sat:
        md.append("## Saturation (pcap replay, answers as fast as the pipeline takes requests)\n")
        md.append(f"Median of {a.repeat} runs. Agreement: same answer as the caches-off run on the "
                  "same requests. CPU/req: the appliance process's CPU time (all lcores, polling "
                  "included) over its serving window; busy/req: wall time the stages spent on "
                  "batches, summed over stages (with 6 lcores on 2 CPUs it includes time a stage "
                  "was preempted, so it can exceed CPU/req).\n")
        md.append(table([
            ("workload", lambda r: r["workload"]), ("mode", lambda r: r["mode"]),
            ("answers/s", lambda r: f(r["throughput_rps"])),
            ("vs off", lambda r: f(r["speedup_vs_off"], "{:.2f}x")),
            ("hits", lambda r: pc(r["hit_rate"], 1)),
            ("eff. layers", lambda r: f(r["effective_layers"], "{:.3f}")),
            ("eff. MACs", lambda r: f(r["effective_macs"], "{:.3f}")),
            ("agreement", lambda r: pc(r["agreement"])),
            ("accuracy", lambda r: pc(r["accuracy"])),
            ("CPU us/req", lambda r: f(r["cpu_us_per_req"])),
            ("busy us/req", lambda r: f(r["busy_us_per_req"])),
            ("runs", lambda r: r["throughput_runs"])], sat))
        md.append("Per stage (one run): `stage:requests in/mean batch/busy seconds`. A stage owns a "
                  "fixed layer range, so when requests exit early the work gathers in the first "
                  "stages.\n")
        md.append(table([("workload", lambda r: r["workload"]), ("mode", lambda r: r["mode"]),
                         ("stages", lambda r: r["stages"])], sat))
    if h.rows["load"]:
        md.append("## Offered-load sweep (live: net_af_packet on a veth pair, client in a "
                  "network namespace)\n")
        md.append("Open loop (perf/loadgen.py); latency at the client from send to answer. The "
                  "client is Python and shares the 2 CPUs with the appliance's 6 lcores.\n")
        md.append(table([
            ("workload", lambda r: r["workload"]), ("mode", lambda r: r["mode"]),
            ("offered/s", lambda r: f(r["offered_rps"])),
            ("answered/s", lambda r: f(r["answered_rps"])), ("lost", lambda r: str(r["lost"])),
            ("p50 us", lambda r: f(r["p50_us"])), ("p90 us", lambda r: f(r["p90_us"])),
            ("p99 us", lambda r: f(r["p99_us"])), ("hits", lambda r: pc(r["hit_rate"], 0)),
            ("hit p50 us", lambda r: f(r["hit_p50_us"])),
            ("miss p50 us", lambda r: f(r["miss_p50_us"])),
            ("agreement", lambda r: pc(r["agreement"])),
            ("CPU us/req", lambda r: f(r["cpu_us_per_req"]))], h.rows["load"]))
    if h.rows["offline"]:
        md.append("## Offline (`freeze eval`, same workloads): where the time goes\n")
        md.append(table([
            ("workload", lambda r: r["workload"]), ("mode", lambda r: r["mode"]),
            ("hits", lambda r: pc(r["hit_rate"], 1)),
            ("by block4", lambda r: pc(r["exit_by_mid"], 1)),
            ("eff. layers", lambda r: f(r["effective_layers"], "{:.3f}")),
            ("eff. MACs", lambda r: f(r["effective_macs"], "{:.3f}")),
            ("agreement", lambda r: pc(r["agreement"])), ("accuracy", lambda r: pc(r["accuracy"])),
            ("lookups ns/req", lambda r: f(r["lookup_ns_total"])),
            ("layers ns/req", lambda r: f(r["layer_ns_total"])),
            ("cache KiB", lambda r: f(r["cache_bytes"] / 1024 if r["cache_bytes"] else None)),
            ("online inserts", lambda r: f(r["online_inserts"]))], h.rows["offline"]))
    if h.rows["sweep"]:
        md.append("## Threshold sweep (calibrated on the train split, evaluated on the test set)\n")
        md.append(table([
            ("kind", lambda r: r["kind"]), ("threshold", lambda r: str(r["threshold"])),
            ("hits", lambda r: pc(r["hit_rate"], 1)),
            ("eff. layers", lambda r: f(r["effective_layers"], "{:.3f}")),
            ("agreement", lambda r: pc(r["agreement"])), ("accuracy", lambda r: pc(r["accuracy"]))],
            h.rows["sweep"]))
    if h.rows["peers"]:
        md.append("## Peers on the same weights (perf/bench_infer.py, no caches)\n")
        md.append(table([
            ("system", lambda r: r["system"]), ("mode", lambda r: r["mode"]),
            ("batch", lambda r: r["batch"]), ("threads", lambda r: r["threads"]),
            ("images/s", lambda r: f(float(r["images_per_s_median"]))),
            ("vs PyTorch best", lambda r: f(float(r["ratio_vs_pytorch_best"]), "{:.2f}x")),
            ("accuracy", lambda r: pc(float(r["accuracy"])))], h.rows["peers"]))
    if h.profiles:
        md.append("## Profiles (`perf record -g` of one saturation run, self time)\n")
        for case, pr in h.profiles.items():
            md.append(f"{case} ({pr['throughput']:.0f} answers/s under perf):\n")
            md.append("```\n" + pr["text"] + "\n```\n")
    if h.notes:
        md.append("## Notes\n")
        md.extend(f"- {n}" for n in h.notes)
        md.append("")
    if plots:
        md.append("## Plots\n")
        md.extend(f"![{p}]({p})\n" for p in plots)
    with open(os.path.join(h.out, "report.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
