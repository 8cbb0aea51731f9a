"""The audit: statistics over every record, and the `synth audit` report built from them."""
