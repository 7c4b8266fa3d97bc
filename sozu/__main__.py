"""`python -m sozu` runs the same command line as the `sozu` console script."""

from sozu.cli.main import main

raise SystemExit(main())
