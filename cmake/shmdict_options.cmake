# shmdict_target_defaults(<target>): warnings as errors and the sanitizer choice, per target
# (never through global flags), so that third-party code is not held to our warning set.
function(shmdict_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 at -O3 (the Release build) reports -Wrestrict inside libstdc++ for
    # `"literal" + std::string` (GCC bug 105329, fixed in 13): a false positive, and an error
    # under -Werror. Kept as a warning rather than silenced.
    target_compile_options(${target} PRIVATE -Wno-error=restrict)
  endif()
  if(SHMDICT_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${SHMDICT_SANITIZE} -fno-omit-frame-pointer
      -fno-sanitize-recover=all)
    target_link_options(${target} PRIVATE -fsanitize=${SHMDICT_SANITIZE})
    if(SHMDICT_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # TSan does not model fences. Ours only order the seqlock's reclaim_position check around
      # a copy that is already excluded from TSan (log_ring.cc RacyCopy); every other
      # cross-thread handoff is an acquire/release pair TSan does see.
      target_compile_options(${target} PRIVATE -Wno-tsan)
    endif()
  endif()
endfunction()

# shmdict_test_defaults(<target>): shmdict_target_defaults plus test code built at -O1 in the
# optimized build types. Test executables are gtest bodies, lambdas and the test kit: their -O2
# code generation was about a third of each test file's compile time (bridge/src/service_test.cc:
# 32 s at -O2 -g, 21 s at -O1 -g) and most of CI's compile time, while what the tests exercise,
# the libraries and the programs they spawn, keeps the build type's flags. -O1 comes after the
# build type's -O2 on the command line, and GCC and Clang take the last -O.
set(SHMDICT_TEST_OPTIMIZATION "-O1" CACHE STRING
  "Optimization of test executables in optimized builds (empty: the build type's)")
function(shmdict_test_defaults target)
  shmdict_target_defaults(${target})
  if(SHMDICT_TEST_OPTIMIZATION AND NOT CMAKE_BUILD_TYPE STREQUAL "Debug")
    target_compile_options(${target} PRIVATE ${SHMDICT_TEST_OPTIMIZATION})
  endif()
endfunction()
