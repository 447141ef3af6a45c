from tui_ft.cli import main

raise SystemExit(main())
