package all

import _ "github.com/tagpipe/tagpipe/inputs/opcua" // register inputs.opcua
