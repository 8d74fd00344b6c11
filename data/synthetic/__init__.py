"""Generated data sets: the demo brain-slice set with captions and lesion masks (``demo``, run as
``python -m data.synthetic.demo``), compound figures built from real tiles (``compound_synth``), and
controlled variations of the demo set for measuring what a model knows (``probes``)."""
