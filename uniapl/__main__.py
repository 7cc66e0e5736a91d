from uniapl.cli import main

raise SystemExit(main())
