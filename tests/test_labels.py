import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, trainId2label

from seg_utils import labels


def test_counts_and_names():
    assert labels.NUM_LABEL_IDS == 34
    assert labels.NUM_TRAIN_IDS == 19
    assert labels.num_classes("trainId") == 19 and labels.num_classes("labelId") == 34
    assert labels.class_names()[:3] == ("road", "sidewalk", "building")
    assert labels.class_names()[-1] == "bicycle"
    assert labels.CATEGORY_NAMES == ("flat", "construction", "object", "nature", "sky", "human", "vehicle")


def test_lookup_tables_follow_the_official_table():
    for label_id in range(34):
        expected = id2label[label_id].trainId
        expected = 255 if expected in (-1, 255) else expected
        assert labels.LABEL_ID_TO_TRAIN_ID[label_id] == expected
    # values that are not label ids are ignored, never mapped onto a class
    assert (labels.LABEL_ID_TO_TRAIN_ID[34:] == 255).all()
    for train_id in range(19):
        assert id2label[labels.TRAIN_ID_TO_LABEL_ID[train_id]].trainId == train_id
    assert labels.TRAIN_ID_TO_LABEL_ID[255] == 0  # the official evaluator crashes on 255


def test_round_trip_and_palette():
    train_ids = np.array([[0, 1, 18, 255]], dtype=np.uint8)
    back = labels.label_ids_to_train_ids(labels.train_ids_to_label_ids(train_ids))
    np.testing.assert_array_equal(back, [[0, 1, 18, 255]])
    for train_id in range(19):
        assert tuple(labels.palette()[train_id]) == trainId2label[train_id].color
    assert tuple(labels.palette("labelId")[26]) == id2label[26].color  # car
    assert labels.TRAIN_ID_TO_CATEGORY[13] == labels.CATEGORY_NAMES.index("vehicle")


def test_bad_mode():
    with pytest.raises(ValueError, match="label mode"):
        labels.num_classes("trainIds")
