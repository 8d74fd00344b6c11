"""Training data: record types, datasets, loaders, caption cleaning, image loading and ``data.check``.

The top of the package is what training reads. Producing data lives in the sub-packages:

- ``data.scrape``: collecting figure/caption pairs from PubMed Central (``scrape.py``);
- ``data.figures``: cutting compound figures into panels and captions into sub-captions
  (``split_figures.py``), and writing retrieval splits;
- ``data.synthetic``: generated data sets (the demo brain slices, compound figures for tests).

Every stage hands records to the next through the types in ``data.records`` (one reader, one
atomic writer), so the keys each file holds are written down once.
"""
