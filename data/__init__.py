"""Datasets, caption cleaning, demo data, PubMed clients and figure splitting."""
