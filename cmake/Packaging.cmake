# Installation rules and Debian packages (CPack).
#
#   cmake --install build --prefix /opt/eenn        # everything under /opt/eenn
#   cmake --install build --component daemons       # only eenn-server and eenn-device
#   cd build && cpack                               # eenn, eenn-tools, eenn-models .deb
#
# Components and the packages they become:
#   daemons -> eenn         eenn-server, eenn-device, eenn-make-certs, the systemd
#                           units (lib/systemd/system) and deploy/ (share/doc/eenn/deploy)
#   tools   -> eenn-tools   eenn-client, eenn-infer, eenn-train and the other tools
#   models  -> eenn-models  the shipped bundle (share/eenn/models/cifar10-resnet18)
# The eenn_* libraries are static; the binaries need only Debian's shared
# libraries (LibTorch, gRPC, OpenCV...), found by dpkg-shlibdeps (dpkg-dev).
include(GNUInstallDirs)

set(EENN_DAEMON_TARGETS eenn-server eenn-device)
set(EENN_TOOL_TARGETS eenn-client eenn-infer eenn-train eenn-calibrate eenn-eval eenn-plan eenn-profile
                      eenn-bench-forward eenn-bench-server eenn-queue eenn-control-sim)
install(TARGETS ${EENN_DAEMON_TARGETS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT daemons)
install(TARGETS ${EENN_TOOL_TARGETS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tools)
install(PROGRAMS tools/make-certs.sh DESTINATION ${CMAKE_INSTALL_BINDIR} RENAME eenn-make-certs
        COMPONENT daemons)
install(DIRECTORY models/cifar10-resnet18 DESTINATION ${CMAKE_INSTALL_DATADIR}/eenn/models COMPONENT models)

# deploy/ (systemd units, Prometheus configuration...) when the checkout has it.
if(EXISTS ${PROJECT_SOURCE_DIR}/deploy/systemd)
  # The units name binaries under /usr/local (cmake --install's default
  # prefix); installed elsewhere they name the prefix actually used.
  file(GLOB EENN_UNITS ${PROJECT_SOURCE_DIR}/deploy/systemd/*.service)
  foreach(unit IN LISTS EENN_UNITS)
    get_filename_component(unit_name ${unit} NAME)
    install(CODE "
      set(unit_dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
      message(STATUS \"Installing: \${unit_dir}/${unit_name}\")
      file(READ \"${unit}\" text)
      string(REPLACE \"/usr/local/\" \"\${CMAKE_INSTALL_PREFIX}/\" text \"\${text}\")
      file(MAKE_DIRECTORY \"\${unit_dir}\")
      file(WRITE \"\${unit_dir}/${unit_name}\" \"\${text}\")"
      COMPONENT daemons)
  endforeach()
endif()
if(EXISTS ${PROJECT_SOURCE_DIR}/deploy)
  install(DIRECTORY deploy/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/deploy COMPONENT daemons)
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME eenn)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "eenn")
set(CPACK_PACKAGE_CONTACT "eenn maintainers <eenn@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Collaborative early-exit CNN inference: edge and offload daemons")
set(CPACK_PACKAGE_DESCRIPTION
    "eenn-device runs the first layers of an early-exit CNN on the edge and offloads the rest over gRPC to eenn-server.")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL daemons tools models)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_DAEMONS_PACKAGE_NAME eenn)
set(CPACK_DEBIAN_DAEMONS_PACKAGE_DEPENDS "openssl")
set(CPACK_DEBIAN_DAEMONS_PACKAGE_RECOMMENDS "eenn-models")
set(CPACK_DEBIAN_DAEMONS_DESCRIPTION
    "Collaborative early-exit CNN inference: eenn-server and eenn-device\n eenn-device runs the first layers of an early-exit CNN on the edge and offloads the rest over\n gRPC to eenn-server (TLS, health checks, Prometheus metrics, systemd units).")
set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME eenn-tools)
set(CPACK_DEBIAN_TOOLS_DESCRIPTION
    "eenn tools: client, local inference, training, calibration, planning and benchmarks\n eenn-client, eenn-infer, eenn-train, eenn-calibrate, eenn-eval, eenn-plan, eenn-profile, eenn-queue,\n eenn-control-sim and the eenn-bench-* programs.")
set(CPACK_DEBIAN_MODELS_PACKAGE_NAME eenn-models)
set(CPACK_DEBIAN_MODELS_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_MODELS_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_MODELS_DESCRIPTION
    "eenn model bundle: early-exit ResNet-18 x0.5 for CIFAR-10\n The bundle the daemons and tools load with --bundle /usr/share/eenn/models/cifar10-resnet18.")
include(CPack)
