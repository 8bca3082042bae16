from pysniff.cli import main

raise SystemExit(main())
