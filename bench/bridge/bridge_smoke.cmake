# CTest bridge_bench_smoke: runs `shmdict_bridge_bench --quick --out OUT`, then checks
# OUT/bridge.json with `shmdict_bridge_bench --check-json` (every row present, each figure > 0 or
# "n/a" with a reason). Usage: cmake -DBENCH=<shmdict_bridge_bench> -DOUT=<dir> -P bridge_smoke.cmake
if(NOT BENCH OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DBENCH=<shmdict_bridge_bench> -DOUT=<dir> -P bridge_smoke.cmake")
endif()
file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND "${BENCH}" --quick --out "${OUT}" RESULT_VARIABLE run_status
  OUTPUT_VARIABLE run_output ERROR_VARIABLE run_errors)
if(NOT run_status EQUAL 0)
  message(FATAL_ERROR "shmdict_bridge_bench --quick failed (${run_status}):\n${run_errors}\n${run_output}")
endif()
foreach(file bridge.md bridge.json)
  if(NOT EXISTS "${OUT}/${file}")
    message(FATAL_ERROR "shmdict_bridge_bench --quick wrote no ${file}")
  endif()
endforeach()
execute_process(COMMAND "${BENCH}" --check-json "${OUT}/bridge.json" RESULT_VARIABLE check_status
  OUTPUT_VARIABLE check_output ERROR_VARIABLE check_errors)
if(NOT check_status EQUAL 0)
  message(FATAL_ERROR "bridge.json check failed:\n${check_errors}${check_output}")
endif()
message(STATUS "${check_output}")
file(REMOVE_RECURSE "${OUT}")
