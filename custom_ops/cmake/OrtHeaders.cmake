# The ONNX Runtime C/C++ API headers. No PyPI wheel and no Debian package ships them; in order:
#   1. ORT_INCLUDE_DIR, as a CMake cache variable (-DORT_INCLUDE_DIR=...) or in the environment;
#   2. a cache from an earlier build: ${XDG_CACHE_HOME:-~/.cache}/acmtool/ort-headers-0.4.9/
#      (ACMTOOL_CACHE_DIR replaces ${XDG_CACHE_HOME:-~/.cache}/acmtool);
#   3. the npm package com.github.asus4.onnxruntime@0.4.9 (ORT_API_VERSION 29), fetched with
#      `npm pack` (about 150 MB, into the build tree, deleted afterwards); only its Headers/ folder
#      is extracted, into the cache of step 2.
# Sets ORT_INCLUDE_DIR. On failure it stops with a message that starts with
# "ACMTOOL_ORT_HEADERS_UNAVAILABLE" (the tests skip on that marker, and fail on anything else).

set(ACMTOOL_ORT_NPM_PACKAGE "com.github.asus4.onnxruntime")
set(ACMTOOL_ORT_NPM_VERSION "0.4.9")
set(ACMTOOL_ORT_NPM_SHA1 "3659f34012db8208ffb7f67d704204cb08792fed")
set(ACMTOOL_ORT_NPM_HEADERS
    "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-simulator/onnxruntime.framework/Headers")

function(_acmtool_ort_headers_fail why)
  message(FATAL_ERROR "ACMTOOL_ORT_HEADERS_UNAVAILABLE: ${why}\n"
                      "Set ORT_INCLUDE_DIR to a folder holding onnxruntime_cxx_api.h (ONNX Runtime >= 1.29), "
                      "or install npm so that the build can fetch ${ACMTOOL_ORT_NPM_PACKAGE}@${ACMTOOL_ORT_NPM_VERSION}.")
endfunction()

function(acmtool_find_ort_headers)
  if(NOT ORT_INCLUDE_DIR AND DEFINED ENV{ORT_INCLUDE_DIR} AND NOT "$ENV{ORT_INCLUDE_DIR}" STREQUAL "")
    set(ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}")
  endif()
  if(ORT_INCLUDE_DIR)
    if(NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_cxx_api.h")
      message(FATAL_ERROR "ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR} has no onnxruntime_cxx_api.h")
    endif()
    set(ORT_INCLUDE_DIR "${ORT_INCLUDE_DIR}" PARENT_SCOPE)
    message(STATUS "ONNX Runtime headers: ${ORT_INCLUDE_DIR} (ORT_INCLUDE_DIR)")
    return()
  endif()

  if(DEFINED ENV{ACMTOOL_CACHE_DIR} AND NOT "$ENV{ACMTOOL_CACHE_DIR}" STREQUAL "")
    set(cache_root "$ENV{ACMTOOL_CACHE_DIR}")
  elseif(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
    set(cache_root "$ENV{XDG_CACHE_HOME}/acmtool")
  elseif(DEFINED ENV{HOME} AND NOT "$ENV{HOME}" STREQUAL "")
    set(cache_root "$ENV{HOME}/.cache/acmtool")
  else()
    set(cache_root "${CMAKE_BINARY_DIR}/_cache")
  endif()
  set(headers "${cache_root}/ort-headers-${ACMTOOL_ORT_NPM_VERSION}")
  if(EXISTS "${headers}/onnxruntime_cxx_api.h")
    set(ORT_INCLUDE_DIR "${headers}" PARENT_SCOPE)
    message(STATUS "ONNX Runtime headers: ${headers} (cached)")
    return()
  endif()

  find_program(ACMTOOL_NPM npm)
  if(NOT ACMTOOL_NPM)
    _acmtool_ort_headers_fail("npm not found, ORT_INCLUDE_DIR not set, and no cached headers in ${headers}.")
  endif()
  set(work "${CMAKE_BINARY_DIR}/_ort_headers_download")
  file(REMOVE_RECURSE "${work}")
  file(MAKE_DIRECTORY "${work}")
  message(STATUS "Fetching ${ACMTOOL_ORT_NPM_PACKAGE}@${ACMTOOL_ORT_NPM_VERSION} with npm pack (about 150 MB, once)")
  # A private npm cache, so the 150 MB do not also stay in ~/.npm.
  execute_process(
    COMMAND "${ACMTOOL_NPM}" pack "${ACMTOOL_ORT_NPM_PACKAGE}@${ACMTOOL_ORT_NPM_VERSION}" --cache "${work}/npm-cache"
            --loglevel error
    WORKING_DIRECTORY "${work}"
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE err)
  set(tgz "${work}/${ACMTOOL_ORT_NPM_PACKAGE}-${ACMTOOL_ORT_NPM_VERSION}.tgz")
  if(NOT rc EQUAL 0 OR NOT EXISTS "${tgz}")
    file(REMOVE_RECURSE "${work}")
    _acmtool_ort_headers_fail("npm pack ${ACMTOOL_ORT_NPM_PACKAGE}@${ACMTOOL_ORT_NPM_VERSION} failed (${rc}): ${err}")
  endif()
  file(SHA1 "${tgz}" sha1)
  if(NOT sha1 STREQUAL ACMTOOL_ORT_NPM_SHA1)
    file(REMOVE_RECURSE "${work}")
    message(FATAL_ERROR "${tgz}: SHA-1 ${sha1}, expected ${ACMTOOL_ORT_NPM_SHA1}")
  endif()
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -E tar xzf "${tgz}" -- "${ACMTOOL_ORT_NPM_HEADERS}"
    WORKING_DIRECTORY "${work}"
    RESULT_VARIABLE rc
    ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 OR NOT EXISTS "${work}/${ACMTOOL_ORT_NPM_HEADERS}/onnxruntime_cxx_api.h")
    file(REMOVE_RECURSE "${work}")
    _acmtool_ort_headers_fail("could not extract ${ACMTOOL_ORT_NPM_HEADERS} from ${tgz}: ${err}")
  endif()
  # Into the cache through a rename, so that a concurrent build never sees half a folder.
  file(MAKE_DIRECTORY "${cache_root}")
  string(RANDOM LENGTH 8 tag)
  set(staging "${headers}.tmp-${tag}")
  file(COPY "${work}/${ACMTOOL_ORT_NPM_HEADERS}/" DESTINATION "${staging}")
  file(WRITE "${staging}/SOURCE.txt"
       "npm ${ACMTOOL_ORT_NPM_PACKAGE}@${ACMTOOL_ORT_NPM_VERSION} (sha1 ${ACMTOOL_ORT_NPM_SHA1})\n${ACMTOOL_ORT_NPM_HEADERS}/\n")
  if(NOT EXISTS "${headers}/onnxruntime_cxx_api.h")
    file(RENAME "${staging}" "${headers}" RESULT rename_rc)
  endif()
  file(REMOVE_RECURSE "${staging}" "${work}")
  if(NOT EXISTS "${headers}/onnxruntime_cxx_api.h")
    _acmtool_ort_headers_fail("could not write the header cache ${headers}")
  endif()
  set(ORT_INCLUDE_DIR "${headers}" PARENT_SCOPE)
  message(STATUS "ONNX Runtime headers: ${headers} (fetched)")
endfunction()
