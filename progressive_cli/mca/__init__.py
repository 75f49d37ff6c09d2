"""The Master Control Agent: complexity analysis and strategy selection (routing arrives with the MCA issue)."""
