"""The single-file executable's entry point: `rmmscan ...`, the installed command's `main`.

On Windows, `rmmscan.exe windows-service [--config FILE]` is the command line the Windows
service is registered with (rmmscan.cli.windows_service, where `python -m` runs it instead):
the process is handed to the Service Control Manager. The sweep forks its worker processes
(os.fork; threads on Windows), and no multiprocessing start method re-executes the program,
so no `multiprocessing.freeze_support()` is needed.
"""

import sys

from rmmscan.cli.main import main

if __name__ == "__main__":
    if sys.platform == "win32":
        from rmmscan.cli.windows_service import SERVICE_COMMAND
        from rmmscan.cli.windows_service import main as service

        if sys.argv[1:2] == [SERVICE_COMMAND]:
            sys.exit(service(sys.argv[2:]))
    sys.exit(main())
