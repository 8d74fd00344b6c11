"""Generated data sets: the demo brain-slice set with captions and lesion masks (``demo``, run as
``python -m data.synthetic.demo``)."""
