"""``tui-ft validate``: a fine-tuned potential beside the pretrained CHGNet (or another checkpoint) and the
DFT labels, on what a potential is used for: relaxation, equation of state, MD stability, drift from the
foundation model and the test errors per target. One module per check; ``runner`` runs them and writes
``results.json`` / ``summary.md`` / ``events.jsonl`` into a results folder."""

CHECKS = ("relax", "eos", "md", "drift", "errors")
