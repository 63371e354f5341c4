"""The layer plans of the conv families, as their papers list them: a number is a 3x3 convolution
of that many channels, "M" a 2x2 max-pool of stride 2. Read by the models (conv.py, vgg.py) and by
the checks of a config and a data set (``models.check``, ``check_input``), which import no Flax."""

# Conv-2/4/6, Frankle & Carbin 2019, Fig. 2 (conv.py)
CONV = {
    "conv2": [64, 64, "M"],
    "conv4": [64, 64, "M", 128, 128, "M"],
    "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
}

# CIFAR VGG-11/13/16/19, open_lth's cifar_vgg plans (vgg.py)
VGG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
