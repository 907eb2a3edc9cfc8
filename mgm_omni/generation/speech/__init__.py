"""Speech decoding: row layout, chunk state step, prompt, runner, native step."""
