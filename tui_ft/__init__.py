"""tui-ft: a terminal workbench for fine-tuning CHGNet."""

__version__ = "0.1.0"
