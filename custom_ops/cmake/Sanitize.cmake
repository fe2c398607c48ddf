# ACMTOOL_SANITIZE=ON: a target with AddressSanitizer and UndefinedBehaviorSanitizer (GCC), for
# `make test-asan`. Every finding stops the process (-fno-sanitize-recover=all), so a
# test run that ends cleanly saw none. A sanitized library needs the runtimes loaded first:
# custom_ops/tools/run_sanitized.sh preloads them into the test process.
option(ACMTOOL_SANITIZE "Build with -fsanitize=address,undefined (tests: make test-asan)" OFF)

function(acmtool_sanitize target)
  if(NOT ACMTOOL_SANITIZE)
    return()
  endif()
  # GCC links its runtimes as shared libraries, which run_sanitized.sh preloads; Clang would leave a
  # shared library's ASan symbols undefined (and -Wl,--no-undefined refuses that).
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    message(FATAL_ERROR "ACMTOOL_SANITIZE=ON needs GCC (CXX=g++); this is ${CMAKE_CXX_COMPILER_ID}")
  endif()
  # C++ sources only: nvcc does not take these flags (and ASan cannot see device code anyway).
  # -O1 after the build type's -O3: the sanitized build compiles in half the time, and stack traces
  # keep their frames.
  set(flags -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1)
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${flags}>")
  target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  message(STATUS "Sanitizers: on for ${target} (address, undefined; a finding ends the process)")
endfunction()
