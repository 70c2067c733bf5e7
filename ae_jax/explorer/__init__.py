"""The latent explorer: an interactive page written from trained models.

``export`` folds each seed's BatchNorm into plain dense layers (numpy forward
included, checked against JAX), ``glyphs`` draws the non-digit inputs,
``page`` writes the self-contained ``index.html``, ``analysis`` the PCA
figure and code-range tables, and ``study`` trains (or reuses) the models and
writes everything into one folder.
"""
