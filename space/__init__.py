"""The Space's parts, one job a module (gradio code stays out of ``pipeline``); ``app.py`` builds the page from
them and launches it. Imports run one way: app -> space -> pipeline.

- ``config``: the env vars the Space reads (limits, queue, examples).
- ``service``: the endpoint functions (``CarDamageApp``) and what they ask of gradio's queue.
- ``jobs``: private job folders for zip requests, and their sweep.
- ``status``: the models loading in the background, and the banner / table that report it.
- ``inputs``: upload components that refuse URLs.
- ``text``: Markdown for visitors (paths shortened, names escaped, the batch summary).
- ``examples``: the example photos (a folder, and a Hub dataset).
- ``page``: the page itself (tabs, thresholds, models panel) and its launch options.
"""
