"""Datasets the package generates or reads: the classification proxy of Part II
(:mod:`effnet_tutorial.data.proxy`) and, in Part IV, detection data in COCO format.
"""
