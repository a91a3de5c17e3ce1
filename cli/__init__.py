"""Click front end of rsisr, installed as the ``rsisr_cli`` package (console script ``rsisr``)."""
