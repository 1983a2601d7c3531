"""Training tools, in the order the work happens (imports run one way: ``train`` -> ``pipeline``, never back).

sources
- ``sources``: the shared data sets and ONE held-out split across all of them.
data
- ``prepare``: what people have (VIA or COCO polygons, image folders) -> what training needs
  (``python -m train.prepare``).
- ``build_data``: the build's datasets, all cut from the one held-out split.
- ``build_parts``: the build's part data (the part segmenter's, the damaged-part figure's held-out yb photos).
- ``compact``: a compact, self-contained copy of a build's training data (``python -m train.compact``).
- ``gpu_kit``: what a lent GPU machine trains the damage segmenter from (``.gpu/``: compact photos, wheels), and
  the files it brings back as a build (``python -m train.gpu_kit``; the call itself: ``train/gpu_call.sh``).
train
- ``classifier_data``: what an image classifier trains on: image folders as targets, the dataset, augmentation.
- ``train_classifier``: fine-tune an image classifier as the car check or the damage check (and grades).
- ``train_segmenter``: train a YOLO-seg (damage masks, car parts) on a YOLO data yaml.
- ``build_profile``: the whole build: data, trainings, evaluations, profile.toml (``python -m train.build_profile``).
- ``build_outputs``: what the build writes beside its models: profile.toml, calibration photos, the summary's records.
evaluate
- ``evaluate/``: one module per kind of figure, each measured through the product's own code
  (``python -m train.evaluate``).
- ``build_eval``: the build's evaluations: thresholds, the damage rule and the headline numbers.
- ``release_eval``: the release's figures as a user gets them, through ``python -m pipeline`` (``python -m
  train.release_eval``).
- ``release_masks``: the mask figures of the release evaluation (predictions.json vs the held-out polygons).
release
- ``release``: the release in ``models/`` (``python -m train.release``).
- ``release_car``: the car check's "damaged car" class, fitted on the build's cars and ImageNet photos the
  evaluation does not sample (``python -m train.release_car``; ``build_profile`` runs it).
- ``release_models``: what the release is made of: its models and the sets each saw.
- ``release_cards``: the release's model cards.

``common`` holds the helpers every step shares (offline environment, image listing, source tags).
"""
