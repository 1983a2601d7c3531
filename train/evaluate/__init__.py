"""Measure the models and the product; write metrics JSON and a markdown model card. One module per kind of figure:

- ``metrics``: the shared figures (binary / multiclass metrics, threshold sweeps, accuracy per group, set F1);
- ``product``: the product's own decode, stages and cascade on photo files: what every figure below runs through;
- ``classifiers``: a car or damage check on a labeled folder; ``severity``: the grades;
- ``damage_rules``: how the classifier and the masks should combine into the damage verdict;
- ``segmenter``: mask and box mAP against polygons (Ultralytics' validator: a model's own figure);
- ``damaged_parts``: the damaged parts a report shows vs yb's labels; ``verdicts``: the three verdicts;
- ``report``: metrics.json and the model card; ``__main__``: the command line.

    # a classifier on a labeled folder (<data>/<label>/**); the positive label's folder vs all others
    python -m train.evaluate --task classifier --model models/offline/damage-classifier \
        --data /tmp/damage/val --role damage --output_dir models/offline/eval-damage
    # the ImageNet model as the car check (P(car) = sum of the car classes), folders car/ and not_car/
    python -m train.evaluate --task classifier --model ../shared/models/imagenet-efficientnet-lite0 \
        --data /tmp/car-check --role car --threshold 0.1
    # a segmenter against YOLO (data yaml) or COCO (json) ground truth
    python -m train.evaluate --task segmenter --model models/offline/segmenter/best.pt --data /tmp/seg/data.yaml
    # does the segmenter's evidence help the damage check? (classifier, segmenter, combinations)
    python -m train.evaluate --task combine --model models/offline/damage-classifier \
        --segmenter models/offline/segmenter/best.pt --data models/offline/work/damage/val --imgsz 512
    # the whole pipeline on folders not_car/, whole/, damaged/
    python -m train.evaluate --task pipeline --model models/offline/profile.toml --data /tmp/verdicts
    # the damaged parts a user gets, with a profile, on held-out yb photos
    python -m train.evaluate --task damaged_parts --model models/offline/profile.toml \
        --data models/offline/work/yb-held-out/data.yaml
"""
