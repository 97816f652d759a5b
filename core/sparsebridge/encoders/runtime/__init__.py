"""What a model runs on: precision (bf16 / int8), the thread budget, Accelerate placement, weights
read into the asked dtype, the freed heap given back, PEFT adapters. Below the modules and backends.
"""
