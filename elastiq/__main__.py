"""``python -m elastiq``: the same as the ``elastiq`` command."""
from elastiq.cli import app

app(prog_name="elastiq")
