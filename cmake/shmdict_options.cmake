# shmdict_target_defaults(<target>): warnings as errors and the sanitizer choice, per target
# (never through global flags), so that third-party code is not held to our warning set.
function(shmdict_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
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
