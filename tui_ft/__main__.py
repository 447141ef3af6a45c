from tui_ft.cli import main
from tui_ft.core.train.distributed import exit_process

raise SystemExit(exit_process(main()))
