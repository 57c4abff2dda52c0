"""pe_dev: what develops and tests pe_assets, never shipped in its wheel.

* ``pe_dev.simulator``: a real HTTP server on loopback that keeps the API contracts pe_assets speaks
  (today the Predictive Engagement seed contract; each contract's world in its own module).
* ``pe_dev.demo``: the main job on the embedded defaults (``python3 dev.py demo``).
* ``pe_dev.ui``: the Dagster UI on the embedded defaults (``python3 dev.py ui``).

pe_assets never imports this package (a test holds it to that); it imports pe_assets freely.
"""
