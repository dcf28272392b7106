"""The paper's reported numbers (Tables 2-5), for side-by-side comparison."""

SIZES = (50, 100, 150)

# Method label in the paper -> mecjax scheduler name.
PAPER_METHODS = {
    "TS-Hybrid-SB": "ts_hybrid_sb",
    "DRL-FGSO": "drl_fgso",
    "GAT-MEC": "gat_mec",
    "TSG-MARL": "tsg_marl",
    "QIO-MEC": "qio_mec",
    "DT-MEC": "dt_mec",
    "Unified DRL+GAT+MARL+QIO+DT": "unified",
}
# Variants of a paper method (no paper numbers): QIO-MEC's earlier multi-qubit encoding
# and a warm-started extension (docs/schedulers.md).
VARIANT_METHODS = {"QIO-MEC, multi-qubit encoding": "qio_mec_multi",
                   "QIO-MEC, warm start (extension)": "qio_mec_warm"}
# References: all-local (the floor of the headroom), two selfish ones, and the cooperative
# coordinate descent (the strong reference: the headroom's "best known").
REFERENCES = {"all-local": "local", "greedy": "greedy", "best response (Nash)": "best_response",
              "cooperative (coordinate descent)": "cooperative"}

# Table 2 (latency, ms), Table 3 (energy, J), Table 4 (Jain fairness), per N = 50, 100, 150.
TABLES = {
    "latency_ms": {
        "ts_hybrid_sb": (120, 165, 210), "drl_fgso": (105, 140, 180), "gat_mec": (98, 130, 170),
        "tsg_marl": (92, 125, 160), "qio_mec": (110, 150, 195), "dt_mec": (85, 115, 145),
        "unified": (80, 110, 140),
    },
    "energy_j": {
        "ts_hybrid_sb": (0.85, 1.20, 1.60), "drl_fgso": (0.75, 1.05, 1.40),
        "gat_mec": (0.70, 0.98, 1.30), "tsg_marl": (0.68, 0.95, 1.25),
        "qio_mec": (0.78, 1.10, 1.45), "dt_mec": (0.62, 0.88, 1.15), "unified": (0.60, 0.85, 1.10),
    },
    "fairness": {
        "ts_hybrid_sb": (0.88, 0.86, 0.84), "drl_fgso": (0.91, 0.90, 0.88),
        "gat_mec": (0.93, 0.92, 0.90), "tsg_marl": (0.94, 0.93, 0.92),
        "qio_mec": (0.89, 0.87, 0.85), "dt_mec": (0.96, 0.95, 0.94), "unified": (0.97, 0.96, 0.95),
    },
}
TABLE_TITLES = {
    "latency_ms": ("Table 2", "Average latency (ms)"),
    "energy_j": ("Table 3", "Energy consumption per device per task (J)"),
    "fairness": ("Table 4", "Fairness (Jain's index over per-device throughput)"),
}

# Table 5 (ablation, the paper does not state N; issue 5 runs it at N = 100).
ABLATION = {
    "Full model": (115, 0.88, 6.4, 0.95, 0.80),
    "Without DT": (135, 1.05, 5.8, 0.91, 0.72),
    "Without GAT": (130, 0.98, 5.9, 0.92, 0.70),
    "Without MARL": (125, 0.95, 6.0, 0.90, 0.68),
    "Without DRL": (140, 1.10, 5.6, 0.89, 0.65),
}
ABLATION_COLUMNS = ("latency_ms", "energy_j", "throughput_mbps", "fairness", "utility")
