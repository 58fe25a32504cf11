"""Networks: Caffe-faithful CaffeNet / torchvision-layout AlexNet with named taps, generators, discriminator."""
