package all

import _ "github.com/tagpipe/tagpipe/outputs/influxdb" // register outputs.influxdb and outputs.influxdb_v2
