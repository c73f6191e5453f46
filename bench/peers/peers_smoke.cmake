# CTest peers_smoke: runs `shmdict_peers --quick --out OUT`, then checks OUT/peers.json with
# `shmdict_peers --check-json` (all six systems present in every workload, each with a figure > 0
# or "n/a" and a reason). Usage: cmake -DPEERS=<shmdict_peers> -DOUT=<dir> -P peers_smoke.cmake
if(NOT PEERS OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DPEERS=<shmdict_peers> -DOUT=<dir> -P peers_smoke.cmake")
endif()
file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND "${PEERS}" --quick --out "${OUT}" RESULT_VARIABLE run_status
  OUTPUT_VARIABLE run_output ERROR_VARIABLE run_errors)
if(NOT run_status EQUAL 0)
  message(FATAL_ERROR "shmdict_peers --quick failed (${run_status}):\n${run_errors}\n${run_output}")
endif()
foreach(file peers.md peers.json)
  if(NOT EXISTS "${OUT}/${file}")
    message(FATAL_ERROR "shmdict_peers --quick wrote no ${file}")
  endif()
endforeach()
execute_process(COMMAND "${PEERS}" --check-json "${OUT}/peers.json" RESULT_VARIABLE check_status
  OUTPUT_VARIABLE check_output ERROR_VARIABLE check_errors)
if(NOT check_status EQUAL 0)
  message(FATAL_ERROR "peers.json check failed:\n${check_errors}")
endif()
message(STATUS "${check_output}")
file(REMOVE_RECURSE "${OUT}")
