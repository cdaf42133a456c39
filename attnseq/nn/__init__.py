"""The network: arrays and devices, modules and layers, the LSTM, attention, encoder, decoder, model, optimizers."""
