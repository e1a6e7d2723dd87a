from collarstream.cli import main

raise SystemExit(main())
