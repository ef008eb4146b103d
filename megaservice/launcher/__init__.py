"""`megaservice up`: every service of a pipeline as its own process, started in order, watched, stopped together.

ports.py        a port that is taken, named with the service that wanted it, before anything starts
process.py      one child process: its command, its log lines prefixed with its name, stop
readiness.py    when a started service is ready (its `/v1/ready`, or the embedded PostgreSQL's socket)
demo.py         the demo corpus ingested through dataprep on the first start
observe.py      `--observe`: the trace receiver started first, every service exporting to it
scheduling.py   short scheduler slices for the services on a request's path (not the model server)
supervisor.py   the whole: start in dependency order, wait for each, watch, stop everything on exit
"""

from megaservice.launcher.supervisor import Launcher, LaunchError, service_commands

__all__ = ["LaunchError", "Launcher", "service_commands"]
