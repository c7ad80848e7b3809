"""Names of the class ids of the data sets that have them."""

# Data set name -> the names of its class ids, in id order; other data sets
# are named by their ids. (Cityscapes: the labelIds of cityscapesScripts, as
# palette_data.CITYSCAPES colours them.)
CLASS_NAMES = {
    'cityscapes': (
        'unlabeled', 'ego vehicle', 'rectification border', 'out of roi',
        'static', 'dynamic', 'ground', 'road', 'sidewalk', 'parking',
        'rail track', 'building', 'wall', 'fence', 'guard rail', 'bridge',
        'tunnel', 'pole', 'polegroup', 'traffic light', 'traffic sign',
        'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck',
        'bus', 'caravan', 'trailer', 'train', 'motorcycle', 'bicycle',
        'license plate'),
}
