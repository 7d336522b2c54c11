"""Synthetic data sets with ground truth: procedural street scenes and maps, rendered, not ingested.

``unit ingest demo-street`` / ``demo-maps`` (settings: ``unit_core.ingest_settings``) write
them through :func:`preprocessing.synthetic.dataset.generate_demo_dataset`.

* ``dataset``: scene seeds, pairing, the data set writer of both generators;
* ``street``: a street seen from eye height by day, by night, in rain and in snow;
* ``maps``: an area seen from above as a satellite photo and as a street map;
* ``colour``: the colour helpers both renderers use.
"""
