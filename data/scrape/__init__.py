"""Collecting figure/caption pairs from PubMed Central: the ``scrape.py`` back end.

``config`` holds every setting of a run (and builds the command line from it); ``job`` assembles a
run from it. The sources are NLM Open-i (``openi``) and NCBI E-utilities with JATS full text
(``eutils``, ``jats``); they hand ``candidates`` to the ``scraper``, which downloads and checks each
image (``image_check``) and keeps it in the output folder's ``store`` (images, ``captions.json`` and
a resumable manifest). Every request goes through one polite client (``http``, ``retry``, ``urls``)
and one ``ratelimit`` shared by all NCBI services; ``licenses``, ``safe_paths`` and ``safe_xml``
keep licence strings, remote names and XML from doing harm.
"""
