from kvmbench.cli import main
import sys
sys.exit(main())
