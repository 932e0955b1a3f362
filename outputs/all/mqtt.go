package all

import _ "github.com/tagpipe/tagpipe/outputs/mqtt" // register outputs.mqtt
