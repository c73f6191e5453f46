# A benchmark's smoke test (CTest peers_smoke, bridge_bench_smoke): runs
# `BENCH --quick --out OUT --json OUT/report.json`, checks that it wrote REPORT (its Markdown) and
# the JSON, then checks the JSON with `BENCH --check-json` (every system or row present, each
# figure > 0 or "n/a" with a reason). Timing is never checked.
# Usage: cmake -DBENCH=<program> -DOUT=<dir> -DREPORT=<name.md> -P smoke.cmake
if(NOT BENCH OR NOT OUT OR NOT REPORT)
  message(FATAL_ERROR "usage: cmake -DBENCH=<program> -DOUT=<dir> -DREPORT=<name.md> -P smoke.cmake")
endif()
get_filename_component(name "${BENCH}" NAME)
set(json "${OUT}/report.json")
file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND "${BENCH}" --quick --out "${OUT}" --json "${json}"
  RESULT_VARIABLE run_status OUTPUT_VARIABLE run_output ERROR_VARIABLE run_errors)
if(NOT run_status EQUAL 0)
  message(FATAL_ERROR "${name} --quick failed (${run_status}):\n${run_errors}\n${run_output}")
endif()
foreach(file "${OUT}/${REPORT}" "${json}")
  if(NOT EXISTS "${file}")
    message(FATAL_ERROR "${name} --quick wrote no ${file}")
  endif()
endforeach()
execute_process(COMMAND "${BENCH}" --check-json "${json}" RESULT_VARIABLE check_status
  OUTPUT_VARIABLE check_output ERROR_VARIABLE check_errors)
if(NOT check_status EQUAL 0)
  message(FATAL_ERROR "${name} --check-json failed:\n${check_errors}${check_output}")
endif()
message(STATUS "${check_output}")
file(REMOVE_RECURSE "${OUT}")
