"""DICOMweb peers: remote archives Tessera pulls from, pushes to and mirrors over HTTPS
(README "Peers"). The gateway process runs them: like its DIMSE SCU jobs, they hold no
images, reading and storing here through the router with a principal of the peer."""
