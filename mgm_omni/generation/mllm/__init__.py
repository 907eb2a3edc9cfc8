"""The MLLM (brain): prompt, positions, runner, long audio, vision inputs."""
