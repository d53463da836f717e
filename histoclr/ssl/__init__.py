"""The shared SimCLR core: loss, views, encoder/head, trainer. It knows no data set."""
