"""`aigrid plan`: where to put inference capacity before buying it.

demand.py (what users need) -> supply.py (where capacity may go) -> traffic.py (demand points and hourly
rates) -> screen.py (analytical sizing and site search) -> checks.py (simulator scenarios for the peak and
every single-site failure) -> verify.py (runs them locally or on Ray, refines sizes) -> planner.py (the whole
plan, and the naive placements of naive.py) -> writers (gridspec.py, tables.py, worldmap.py) -> cli.py.
"""
