# Checks that the library `cmake --install` ships carries no crash point, while the test-only
# build of the engine carries them all (which keeps this check honest: if the markers below stop
# marking crash points, it fails instead of passing on nothing).
#   cmake -DNM=<nm> -DPRODUCTION=<libshmdict> -DTEST_ONLY=<libshmdict_core_crashpoints> -P <this>
# Markers: the functions that arm and fire a point (crash_point.cc), and the environment variable
# that arms one, which only that file reads.
foreach(var NM PRODUCTION TEST_ONLY)
  if(NOT ${var})
    message(FATAL_ERROR "check_crash_points: -D${var}=... is required")
  endif()
endforeach()

# Sets <out> to the list of markers found in <library>.
function(crash_point_markers library out)
  execute_process(COMMAND ${NM} -C ${library} OUTPUT_VARIABLE symbols ERROR_VARIABLE errors
    RESULT_VARIABLE failed)
  if(failed)
    message(FATAL_ERROR "check_crash_points: ${NM} ${library} failed: ${errors}")
  endif()
  set(found)
  foreach(symbol "shmdict::internal::ReachCrashPoint" "shmdict::internal::crash_point_armed")
    string(FIND "${symbols}" "${symbol}" at)
    if(NOT at EQUAL -1)
      list(APPEND found ${symbol})
    endif()
  endforeach()
  file(STRINGS ${library} variable REGEX "SHMDICT_CRASH_AT")
  if(variable)
    list(APPEND found "the string SHMDICT_CRASH_AT")
  endif()
  set(${out} "${found}" PARENT_SCOPE)
endfunction()

crash_point_markers(${TEST_ONLY} test_only)
list(LENGTH test_only count)
if(NOT count EQUAL 3)
  message(FATAL_ERROR "check_crash_points: the test-only library ${TEST_ONLY} shows only "
    "[${test_only}] of the 3 crash-point markers: update the markers of this check")
endif()
crash_point_markers(${PRODUCTION} production)
if(production)
  message(FATAL_ERROR "check_crash_points: the installed library ${PRODUCTION} carries crash "
    "points: [${production}]")
endif()
message(STATUS "${PRODUCTION}: no crash point (${TEST_ONLY}: ${count} markers)")
