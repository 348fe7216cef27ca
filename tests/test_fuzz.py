"""The differential fuzz, CI-sized: random programs drawn from the grammar, compiled == interpreter.
The full-size run is ``python -m benchmarks.fuzz --cases 10000`` (its results in benchmarks/results)."""

from hypothesis import HealthCheck, given, settings

from sparsedsl.testing import check_program, programs


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs())
def test_random_programs_compiled_agree_with_the_interpreter(case):
    # "rejected" (a DSLError/FormatError) is a correct answer; a disagreement or a crash fails
    assert check_program(*case) in ("ok", "rejected")
